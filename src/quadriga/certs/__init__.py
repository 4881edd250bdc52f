"""Certificates: the control channel's PKI (`pki`); later the tenants' secret store."""
