"""Distinctive fake secrets: any of them found outside the worker's memory is a leak."""

from __future__ import annotations

#: The bearer key the chaos simulator accepts.
CHAOS_API_KEY = "sk-chaos-SECRET-7c41e9b2d05f"
#: The AWS secret key the chaos workers presign with.
CHAOS_AWS_SECRET = "aws-chaos-SECRET-3f8a62d1c9e4"
#: The AWS access key id the chaos workers presign with (a credential, not a secret, but a
#: presigned URL's ``X-Amz-Credential`` must not travel either).
CHAOS_AWS_ACCESS_KEY = "AKIACHAOSTESTKEY0001"
#: The signature value of URLs submitted already signed.
SUBMITTED_SIGNATURE = "chaossig0c0ffee15bad5eed"
