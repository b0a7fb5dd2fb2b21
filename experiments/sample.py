"""Sample from a trained model (EMA params of the latest checkpoint) with any sampler.

    python -m experiments.sample --workdir runs/digits --sampler dpmpp_2m --num_steps 20
    python -m experiments.sample --from_diffusers DIR --sampler ddim --num_steps 50 --options '{"spacing": "leading"}'

Writes ``samples/<sampler>_<steps>.png`` (a grid) and ``.npz`` (all samples in [-1, 1]) in the workdir,
never overwriting earlier files. ``--from_diffusers`` samples a downloaded diffusers ``UNet2DModel`` checkpoint
(e.g. ``google/ddpm-cifar10-32``: its ``config.json``, weights and ``scheduler_config.json``) with any jaxdiff
sampler (``jaxdiff.interop.diffusers_unet``), writing under ``runs/from_diffusers/<name>/samples`` by default.
"""

import os

import numpy as np
from absl import app, flags, logging

from experiments import common
from jaxdiff.data.audio import write_audio_samples
from jaxdiff.models.imputation import takes_observations
from jaxdiff.outputs import save_grid, save_inpainting, save_npz
from jaxdiff.training.build import build_pipeline
from jaxdiff.training.generate import condition_labels, generate, generate_sdedit, inpaint_test_images
from jaxdiff.training.restore import load_classifier, restore_trained

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints).")
flags.DEFINE_string("from_diffusers", None, "A downloaded diffusers UNet2DModel checkpoint directory (config.json, "
                    "diffusion_pytorch_model.safetensors or .bin, scheduler_config.json) to sample instead of a "
                    "workdir.")
flags.DEFINE_string("sampler", None, "Sampler name (default: the config's).")
flags.DEFINE_integer("num_steps", None, "Sampler steps (default: the config's).")
flags.DEFINE_integer("num_samples", None, "How many samples (default: the config's).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "Output path stem (default: workdir/samples/<sampler>_<steps>).")
flags.DEFINE_float("clip_x0", None, "Clip the implied x0 to [-c, c] at every step (0: off; default: "
                   "the config's sample.clip_x0).")
flags.DEFINE_string("options", "{}", 'Extra sampler options as JSON, e.g. \'{"sigma_max": 80}\'.')
flags.DEFINE_integer("label", None, "Class label for a class-conditional model (-1: labels 0..9 in turn).")
flags.DEFINE_float("guidance_scale", 1.0, "Classifier-free guidance scale (1: plain conditional).")
flags.DEFINE_string("classifier_workdir", None, "Noise-aware classifier (task 'classifier') for "
                    "classifier guidance; --guidance_scale is then the classifier scale.")
flags.DEFINE_string("prompt", None, "Text prompt for a text-conditioned model (digits_text).")
flags.DEFINE_enum("inpaint", None, ["right", "left", "bottom", "top", "center", "random"],
                  "Inpainting: fill this region of test images (the rest is known); writes rows of [masked, "
                  "original, 8 samples] for the first 10 test images (RePaint; --resample, --jump_length).")
flags.DEFINE_integer("resample", 5, "RePaint passes per segment for --inpaint (1 = replacement only).")
flags.DEFINE_integer("jump_length", 10, "RePaint steps per segment for --inpaint.")
flags.DEFINE_string("init_image", None, "SDEdit / img2img: an .npz of images in [-1, 1] (key 'samples', as this "
                    "script writes, or 'images') noised to --t_start and sampled from there.")
flags.DEFINE_float("t_start", 0.5, "SDEdit's starting time in (0, 1] (1: plain sampling from the noised input).")
flags.register_multi_flags_validator(
    ["workdir", "from_diffusers"], lambda f: (f["workdir"] is None) != (f["from_diffusers"] is None),
    message="give exactly one of --workdir (a jaxdiff run) and --from_diffusers (a diffusers checkpoint directory)")


def main(argv):
    del argv
    common.setup()
    if FLAGS.from_diffusers:
        from jaxdiff.apps.diffusers import restore_diffusers

        config, model, schedule, params, step = restore_diffusers(FLAGS.from_diffusers)
        name = os.path.basename(os.path.normpath(FLAGS.from_diffusers))
        workdir = os.path.join("runs", "from_diffusers", name)
        if FLAGS.inpaint or FLAGS.init_image:
            raise app.UsageError("--inpaint / --init_image need a jaxdiff --workdir (its data set); "
                                 "--from_diffusers samples from noise")
    else:
        config, model, schedule, params, step = restore_trained(FLAGS.workdir)
        workdir = FLAGS.workdir
    sampler = FLAGS.sampler or config.sample.sampler
    for name in ("num_steps", "num_samples", "resample", "jump_length"):  # every value checked before any work
        common.check_count(name, getattr(FLAGS, name))
    common.check_clip(FLAGS.clip_x0)
    options = common.sampler_options(FLAGS.options, sampler)
    if not 0.0 < FLAGS.t_start <= 1.0:
        raise app.UsageError(f"--t_start={FLAGS.t_start}; allowed: a time in (0, 1]")
    num_steps = config.sample.num_steps if FLAGS.num_steps is None else FLAGS.num_steps
    n = config.sample.num_samples if FLAGS.num_samples is None else FLAGS.num_samples
    clip = config.sample.clip_x0 if FLAGS.clip_x0 is None else FLAGS.clip_x0
    what = f"sampler {sampler}, {num_steps} steps, clip_x0 {clip:g}, options {options}"
    stem = FLAGS.out or os.path.join(workdir, "samples", f"{sampler}_{num_steps}")
    if FLAGS.inpaint:
        out = inpaint_test_images(config, model, schedule, params, FLAGS.inpaint, sampler=sampler,
                                  num_steps=num_steps, resample=FLAGS.resample, jump_length=FLAGS.jump_length,
                                  seed=FLAGS.seed, clip_x0=FLAGS.clip_x0, **options)
        common.check_finite(out["samples"], what)
        how = "conditional" if takes_observations(model) else f"r{FLAGS.resample}"  # CSDI / RePaint
        stem = f"{stem}_inpaint_{FLAGS.inpaint}_{how}"
        png = save_inpainting(out["x0"], out["mask"], out["samples"], stem + ".png")
        npz = save_npz(stem + ".npz", samples=out["samples"], known=out["known"], mask=out["mask"], step=step,
                       sampler=sampler, num_steps=num_steps, resample=FLAGS.resample)
        logging.info("step %d: wrote %s and %s", step, png, npz)
        print(npz)
        return
    classifier_fn, clf_config = load_classifier(FLAGS.classifier_workdir) if FLAGS.classifier_workdir else (None, None)
    labels = condition_labels(config, n, prompt=FLAGS.prompt, label=FLAGS.label, classifier_config=clf_config)
    if FLAGS.init_image:  # SDEdit: noise the given images to t_start, then sample the rest of the grid
        with np.load(FLAGS.init_image) as f:
            x_init = f["samples"] if "samples" in f else f["images"]
        x = generate_sdedit(config, model, schedule, params, x_init, t_start=FLAGS.t_start, sampler=sampler,
                            num_steps=num_steps, seed=FLAGS.seed, clip_x0=FLAGS.clip_x0,
                            batch_size=config.sample.batch_size, **options)
        stem = f"{stem}_sdedit_t{FLAGS.t_start:g}"
    else:
        x = None
    if x is None:
        x = generate(config, model, schedule, params, sampler=sampler, num_steps=num_steps, num_samples=n,
                     labels=labels, guidance_scale=FLAGS.guidance_scale, classifier_fn=classifier_fn,
                     batch_size=config.sample.batch_size, seed=FLAGS.seed, clip_x0=FLAGS.clip_x0,
                     **options)
    common.check_finite(x, what)
    png = save_grid(x[:100], stem + ".png")
    npz = save_npz(stem + ".npz", samples=x, step=step, sampler=sampler, num_steps=num_steps, seed=FLAGS.seed)
    logging.info("step %d: wrote %s and %s", step, png, npz)
    if config.data.name == "audio":
        reference = build_pipeline(config, "train", 1).batch(0)["x"][0]
        for path in write_audio_samples(x, stem, config.data.rate, reference):
            logging.info("wrote %s", path)
    print(npz)


if __name__ == "__main__":
    common.run(main)
