"""No credential reaches a file: after S3 jobs on a Ray started without the store's settings (so the
workers can only have them from the driver), nothing in Ray's session folder holds the secret."""
from __future__ import annotations

import os

import refine_support as rf

rf.register_by_value()


def test_s3_refinement_leaves_no_secret_in_rays_files(tmp_path, ray_session, s3_bucket):
    from refine_ray.inference.batch import run_refine
    from refine_ray.inference.config import RefineConfig

    truth = rf.write_dataset(f"{s3_bucket}/data", n_files=1, per_file=2)
    checkpoint = f"{s3_bucket}/ck/stage-1-8x8.pt"
    rf.write_checkpoint(checkpoint)          # read by the actors: they need the credentials
    result = run_refine(RefineConfig(checkpoint=checkpoint, input=f"{s3_bucket}/data", output=f"{s3_bucket}/out",
                                     batch_size=2, num_actors=1, cpus_per_actor=0.5, report={"enabled": False}))
    assert result.samples_refined == len(truth) and result.errors == 0
    for variable in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        secret = os.environ[variable].encode()
        assert rf.files_holding(rf.ray_session_dir(), secret) == [], variable
