-- Stand-in for Archon's migration/complete_setup.sql (coleam00/Archon branch
-- archive/v1-task-management-rag @ ecaece4), reduced to what the deploy and its tests touch:
-- it is run ONCE on a new database (it is not idempotent: CREATE TRIGGER / CREATE POLICY),
-- after Supabase's init (it needs the authenticated/service_role roles and auth.role()),
-- and it records upstream's migrations in archon_migrations (section 7, "migration
-- tracking"), which archon-server compares with the files in /app/migration.
-- Upstream also creates the knowledge-base tables (one vector column kept here, so the
-- extension is used as upstream uses it; the stand-in database has pgvector as the image).
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE IF NOT EXISTS archon_settings (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    key VARCHAR(255) UNIQUE NOT NULL,
    value TEXT,
    encrypted_value TEXT,
    is_encrypted BOOLEAN DEFAULT FALSE,
    category VARCHAR(100),
    description TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);
ALTER TABLE archon_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Allow service role full access" ON archon_settings
    FOR ALL USING (auth.role() = 'service_role');
CREATE POLICY "Allow authenticated users to read and update" ON archon_settings
    FOR ALL TO authenticated
    USING (true);
INSERT INTO archon_settings (key, value, is_encrypted, category, description) VALUES
    ('MCP_TRANSPORT', 'dual', false, 'server_config', 'MCP server transport mode'),
    ('HOST', 'localhost', false, 'server_config', 'Host to bind to'),
    ('PORT', '8051', false, 'server_config', 'Port for the MCP server');
INSERT INTO archon_settings (key, encrypted_value, is_encrypted, category, description) VALUES
    ('OPENAI_API_KEY', NULL, true, 'api_keys', 'OpenAI API Key for embedding model');

CREATE TABLE IF NOT EXISTS archon_crawled_pages (
    id BIGSERIAL PRIMARY KEY,
    url VARCHAR NOT NULL,
    chunk_number INTEGER NOT NULL,
    content TEXT NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    source_id TEXT NOT NULL,
    embedding_1536 VECTOR(1536),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT timezone('utc'::text, now()) NOT NULL,
    UNIQUE(url, chunk_number)
);
CREATE INDEX IF NOT EXISTS idx_archon_crawled_pages_embedding_1536 ON archon_crawled_pages
    USING ivfflat (embedding_1536 vector_cosine_ops) WITH (lists = 100);
ALTER TABLE archon_crawled_pages ENABLE ROW LEVEL SECURITY;

CREATE TABLE IF NOT EXISTS archon_migrations (
  id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
  version VARCHAR(20) NOT NULL,
  migration_name VARCHAR(255) NOT NULL,
  applied_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  checksum VARCHAR(32),
  UNIQUE(version, migration_name)
);
INSERT INTO archon_migrations (version, migration_name)
VALUES
  ('0.1.0', '001_add_source_url_display_name'),
  ('0.1.0', '002_add_hybrid_search_tsvector'),
  ('0.1.0', '003_ollama_add_columns'),
  ('0.1.0', '004_ollama_migrate_data'),
  ('0.1.0', '005_ollama_create_functions'),
  ('0.1.0', '006_ollama_create_indexes_optional'),
  ('0.1.0', '007_add_priority_column_to_tasks'),
  ('0.1.0', '008_add_migration_tracking'),
  ('0.1.0', '009_add_cascade_delete_constraints'),
  ('0.1.0', '010_add_provider_placeholders'),
  ('0.1.0', '011_add_page_metadata_table')
ON CONFLICT (version, migration_name) DO NOTHING;
ALTER TABLE archon_migrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Allow service role full access to archon_migrations" ON archon_migrations
    FOR ALL USING (auth.role() = 'service_role');
CREATE POLICY "Allow authenticated users to read archon_migrations" ON archon_migrations
    FOR SELECT TO authenticated
    USING (true);
