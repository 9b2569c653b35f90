-- The TAG DB lives in its own database beside the portal's.
CREATE DATABASE dss_tags OWNER dss;
