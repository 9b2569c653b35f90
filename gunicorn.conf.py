"""gunicorn's settings for the DSS portal; gunicorn reads this file from the working
directory by itself (the Docker image's and `make`'s).

The portal alone decides which proxies to believe (DSS_TRUSTED_PROXIES, dss.middleware).
By default gunicorn would itself take X-Forwarded-Proto from 127.0.0.1 and mark such a
request as HTTPS, whoever on the machine sent it: it must not.
"""

forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
