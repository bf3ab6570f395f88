"""Object store (file://, s3://), content-addressed layout, manifests and release records."""
