"""Sample from a trained model (EMA params of the latest checkpoint) with any sampler.

    python -m experiments.sample --workdir runs/digits --sampler dpmpp_2m --num_steps 20

Writes ``samples/<sampler>_<steps>.png`` (a grid) and ``.npz`` (all samples in [-1, 1]) in the workdir,
never overwriting earlier files.
"""

import json
import os

import numpy as np
from absl import app, flags, logging

from jaxdiff.imputation import inpaint_mask
from jaxdiff.outputs import save_grid, unique_path
from jaxdiff.training.build import build_pipeline, latent_autoencoder, text_enabled
from jaxdiff.training.generate import generate, generate_imputed
from jaxdiff.training.tasks import load_classifier, restore_trained

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints).")
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
flags.mark_flags_as_required(["workdir"])


def inpaint(config, model, schedule, params, step, sampler, num_steps, stem) -> str:
    if latent_autoencoder(config):
        raise ValueError("--inpaint imputes in the model's data space; a latent-diffusion model's pixel masks do "
                         "not map onto its latents (not supported); use a pixel-space model")
    test = build_pipeline(config, "test", 1)
    n_img, per = 10, 8
    x0 = np.stack([test.batch(i)["x"][0] for i in range(n_img)])
    mask = inpaint_mask(FLAGS.inpaint, x0.shape[1:], FLAGS.seed)
    known = np.repeat(x0, per, axis=0)
    x = generate_imputed(config, model, schedule, params, known, mask, sampler=sampler, num_steps=num_steps,
                         resample=FLAGS.resample, jump_length=FLAGS.jump_length, seed=FLAGS.seed,
                         clip_x0=FLAGS.clip_x0, **json.loads(FLAGS.options))
    masked = x0 * mask + (1 - mask) * -1.0
    rows = np.concatenate([masked[:, None], x0[:, None], x.reshape((n_img, per) + x0.shape[1:])], axis=1)
    png = save_grid(rows.reshape((-1,) + x0.shape[1:]), f"{stem}_inpaint_{FLAGS.inpaint}_r{FLAGS.resample}.png",
                    ncol=per + 2)
    npz = unique_path(f"{stem}_inpaint_{FLAGS.inpaint}_r{FLAGS.resample}.npz")
    np.savez_compressed(npz, samples=x, known=known, mask=mask, step=step, sampler=sampler,
                        num_steps=num_steps, resample=FLAGS.resample)
    logging.info("step %d: wrote %s and %s", step, png, npz)
    return npz


def write_audio(config, x, stem: str, num: int = 4) -> list[str]:
    """The first ``num`` samples as WAV files and one PNG: spectrograms of a training segment (left) and
    of the samples."""
    from PIL import Image

    from jaxdiff.data.audio import spectrogram_image, write_wav

    rate = config.data.rate
    paths = [write_wav(f"{stem}_{i}.wav", x[i], rate) for i in range(min(num, len(x)))]
    train = build_pipeline(config, "train", 1).batch(0)["x"][0]
    specs = [spectrogram_image(train, rate)] + [spectrogram_image(x[i], rate) for i in range(min(num, len(x)))]
    gap = np.full((specs[0].shape[0], 4), 255, np.uint8)
    row = np.concatenate([p for s in specs for p in (s, gap)][:-1], axis=1)
    png = unique_path(stem + "_spectrograms.png")
    Image.fromarray(row).save(png)
    return paths + [png]


def main(argv):
    del argv
    config, model, schedule, params, step = restore_trained(FLAGS.workdir)
    sampler = FLAGS.sampler or config.sample.sampler
    num_steps = FLAGS.num_steps or config.sample.num_steps
    n = FLAGS.num_samples or config.sample.num_samples
    if FLAGS.inpaint:
        stem = FLAGS.out or os.path.join(FLAGS.workdir, "samples", f"{sampler}_{num_steps}")
        print(inpaint(config, model, schedule, params, step, sampler, num_steps, stem))
        return
    labels, classifier_fn = None, None
    if FLAGS.classifier_workdir:
        classifier_fn, clf_config = load_classifier(FLAGS.classifier_workdir)
    if FLAGS.prompt is not None:
        if not text_enabled(config):
            raise ValueError(f"--prompt needs a text-conditioned model; {FLAGS.workdir} has no config.text")
        from jaxdiff.models.text import tokenize

        if len(FLAGS.prompt.encode("utf-8")) > config.text.max_len:
            raise ValueError(f"--prompt is {len(FLAGS.prompt.encode('utf-8'))} bytes; the text context "
                             f"holds at most text.max_len={config.text.max_len}")
        labels = np.repeat(tokenize([FLAGS.prompt], config.text.max_len), n, axis=0)
    elif FLAGS.label is not None:
        k = clf_config.num_classes if classifier_fn else config.model.num_classes
        if not k:
            raise ValueError(f"--label needs a class-conditional model or --classifier_workdir; "
                             f"{FLAGS.workdir} has num_classes=None")
        if not -1 <= FLAGS.label < k:
            raise ValueError(f"--label={FLAGS.label}; allowed: 0..{k - 1}, or -1 for all classes in turn")
        labels = np.arange(n) % k if FLAGS.label == -1 else np.full(n, FLAGS.label)
    x = generate(config, model, schedule, params, sampler=sampler, num_steps=num_steps, num_samples=n,
                 labels=labels, guidance_scale=FLAGS.guidance_scale, classifier_fn=classifier_fn,
                 batch_size=config.sample.batch_size, seed=FLAGS.seed, clip_x0=FLAGS.clip_x0,
                 **json.loads(FLAGS.options))
    stem = FLAGS.out or os.path.join(FLAGS.workdir, "samples", f"{sampler}_{num_steps}")
    png = save_grid(x[:100], stem + ".png")
    npz = unique_path(stem + ".npz")
    np.savez_compressed(npz, samples=x, step=step, sampler=sampler, num_steps=num_steps, seed=FLAGS.seed)
    logging.info("step %d: wrote %s and %s", step, png, npz)
    if config.data.name == "audio":
        for path in write_audio(config, x, stem):
            logging.info("wrote %s", path)
    print(npz)


if __name__ == "__main__":
    app.run(main)
