"""Structured logging shared by every function (Powertools Logger, JSON on stdout)."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

# Powertools reads POWERTOOLS_SERVICE_NAME / POWERTOOLS_LOG_LEVEL itself; the default
# service name keeps local runs and tests readable without any environment set.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "stratoserve"))
