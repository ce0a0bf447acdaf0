"""Stand-in of services/data-api/src/models/device.py (bbc4ab4): the same table, columns
and index names as upstream's model (and its migration 002)."""
from datetime import datetime

from sqlalchemy import Column, DateTime, Index, String

from ..database import Base


class Device(Base):
    __tablename__ = "devices"
    device_id = Column(String, primary_key=True)
    name = Column(String, nullable=False)
    manufacturer = Column(String)
    model = Column(String)
    sw_version = Column(String)
    area_id = Column(String)
    integration = Column(String)
    last_seen = Column(DateTime, default=datetime.utcnow)
    created_at = Column(DateTime, default=datetime.utcnow)


Index("idx_device_area", Device.area_id)
Index("idx_device_integration", Device.integration)
Index("idx_device_manufacturer", Device.manufacturer)
