"""Stand-in of services/data-api/src/models/entity.py (bbc4ab4)."""
from datetime import datetime

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, String

from ..database import Base


class Entity(Base):
    __tablename__ = "entities"
    entity_id = Column(String, primary_key=True)
    device_id = Column(String, ForeignKey("devices.device_id", ondelete="CASCADE"))
    domain = Column(String, nullable=False)
    platform = Column(String)
    unique_id = Column(String)
    area_id = Column(String)
    disabled = Column(Boolean, default=False)
    created_at = Column(DateTime, default=datetime.utcnow)


Index("idx_entity_device", Entity.device_id)
Index("idx_entity_domain", Entity.domain)
Index("idx_entity_area", Entity.area_id)
