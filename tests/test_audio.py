"""Audio I/O on files the test writes: 16-bit round trip, resampling keeps pitch and level, segments,
splits by file, clear errors; the audio experiment end to end (WAV samples and spectrograms)."""

import os
import wave

import numpy as np
import pytest

from jaxdiff.data import audio as A


def _tone(rate, seconds, freq, channels=1, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, 1)


def test_wav_round_trip_and_never_overwrite(tmp_path):
    x = _tone(8000, 0.1, 440, channels=2)
    p1 = A.write_wav(str(tmp_path / "a.wav"), x, 8000)
    p2 = A.write_wav(str(tmp_path / "a.wav"), x, 8000)
    assert p1 != p2 and os.path.exists(p1) and os.path.exists(p2)
    rate, y = A.read_wav(p1)
    assert rate == 8000 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-7)  # 16-bit quantisation


def test_resample_keeps_pitch_and_level():
    x = _tone(22050, 1.0, 440.0)
    y = A.resample(x, 22050, 8000)
    assert y.shape == (8000, 1)
    spec = np.abs(np.fft.rfft(y[:, 0] * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 8000)
    assert abs(freqs[spec.argmax()] - 440.0) <= 1.0
    np.testing.assert_allclose(np.abs(y[500:-500]).max(), 0.5, rtol=0.01)
    # A tone above the new Nyquist frequency is filtered out, not aliased.
    z = A.resample(_tone(22050, 1.0, 6000.0), 22050, 8000)
    assert np.abs(z[500:-500]).max() < 0.01


def test_folder_segments_and_split(tmp_path):
    for i in range(10):
        A.write_wav(str(tmp_path / f"f{i}.wav"), _tone(16000, 0.5, 200 + 50 * i, channels=2), 16000)
    tr = A.load_wav_folder(str(tmp_path), "train", rate=4000, length=512)
    te = A.load_wav_folder(str(tmp_path), "test", rate=4000, length=512)
    per_file = (2000 // 512)  # 0.5 s at 4 kHz = 2000 samples -> 3 segments
    assert len(tr) == 9 * per_file and len(te) == per_file
    assert tr[0]["audio"].shape == (512, 1) and tr[0]["audio"].dtype == np.float32
    assert set(tr.arrays["file"]) == set(range(9))


def test_bad_audio(tmp_path):
    p = str(tmp_path / "eight.wav")
    with wave.open(p, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(1)
        f.setframerate(8000)
        f.writeframes(bytes(800))
    with pytest.raises(ValueError, match="16-bit PCM"):
        A.read_wav(p)
    os.remove(p)
    A.write_wav(str(tmp_path / "short.wav"), _tone(8000, 0.01, 440), 8000)
    with pytest.raises(ValueError, match="one segment"):
        A.load_wav_folder(str(tmp_path), "train", rate=8000, length=1024, test_every=100)
    with pytest.raises(ValueError, match="no .wav"):
        A.load_wav_folder(str(tmp_path / "none"), "train", rate=8000, length=8) if os.makedirs(
            tmp_path / "none") is None else None


def test_spectrogram_shows_the_pitch():
    img = A.spectrogram_image(_tone(4000, 0.5, 1000.0), 4000, height=128)
    row = img.mean(1)  # brightness per frequency row; 1000 Hz = half of Nyquist -> the middle
    assert abs(int(np.argmax(row)) - 64) <= 3
