"""Production: real certificates, no shortcuts."""

deploy_env = "prod"
acme_directory = "https://acme-v02.api.letsencrypt.org/directory"
