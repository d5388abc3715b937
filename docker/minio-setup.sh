#!/bin/sh
# One-shot, at every `docker compose up`: the attachments bucket, and a MinIO user that may use
# only that bucket (the server never gets MinIO's root credentials). Safe to run again.
set -eu

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$MERIT_BUCKET"
# Versioning: an archive made with `merit backup --attachments bucket` names blobs it does not
# hold; with versions kept, none of them can be lost for good. (MinIO removes unfinished
# multipart uploads by itself after 24 hours.)
mc version enable "local/$MERIT_BUCKET"

cat > /tmp/merit-policy.json <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$MERIT_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$MERIT_BUCKET/*"]
    }
  ]
}
POLICY
mc admin policy create local merit-attachments /tmp/merit-policy.json
mc admin user add local "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
mc admin policy attach local merit-attachments --user "$S3_ACCESS_KEY" 2>/dev/null || true
echo "bucket $MERIT_BUCKET ready for $S3_ACCESS_KEY"
