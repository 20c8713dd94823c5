"""The `buckets` one-shot of the deploy check's S3 stand-in (what `mc mb` / `mc retention set` do against MinIO):
the image bucket, and the checkpoint bucket with object lock and a default GOVERNANCE retention. Idempotent."""

import os

import boto3

s3 = boto3.client(
    "s3",
    endpoint_url="http://s3:9000",
    aws_access_key_id=os.environ["S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["S3_SECRET_KEY"],
    region_name="us-east-1",
)
existing = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
if os.environ["IMAGES_BUCKET"] not in existing:
    s3.create_bucket(Bucket=os.environ["IMAGES_BUCKET"])
checkpoints = os.environ["CHECKPOINT_BUCKET"]
if checkpoints not in existing:
    s3.create_bucket(Bucket=checkpoints, ObjectLockEnabledForBucket=True)
s3.put_object_lock_configuration(
    Bucket=checkpoints,
    ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": int(os.environ["RETENTION_DAYS"])}},
    },
)
print(f"buckets ready: {os.environ['IMAGES_BUCKET']}, {checkpoints} (object lock, GOVERNANCE)")
