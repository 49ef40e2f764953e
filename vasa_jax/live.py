"""Live mode: microphone audio in as it is captured, frames out as soon as their sound is heard.

    PCM chunks (16 kHz mono) -> StreamingSampler(live_hop=H) -> frames, each with its latency

The sampler slides its motion window along the audio heard so far (`motion.WindowLoop.live_windows`),
so a frame waits only for its own audio, the audio encoder's lookahead (one frame, 40 ms) and at
least `hop` frames' worth of new audio, not for a whole 2-second window.

Latency, as measured here and in the browser: the sound of frame f is the audio at its middle,
sample (f + 0.5) * samples_per_frame; it was captured when the chunk holding it ended, less the time
of the samples after it in that chunk. Latency is the time from that capture to the frame being
ready (server) or drawn (browser). It includes waiting for the rest of the chunk, the lookahead,
the hop and all compute.
"""

import bisect
import dataclasses
import threading
import time
from typing import Callable, Iterator

import numpy as np

from vasa_jax import stream

DEFAULT_HOP = 2          # frames per live window step (80 ms at 25 fps)
DEFAULT_CHUNK_MS = 20.0  # what the browser page and the simulated microphone send
# Frames later than this are dropped (LiveStream). Where a machine cannot draw 25 frames a second
# (2 CPU cores: ~35-42 ms per decode), frames queue until they reach this age and are then dropped,
# so it sets the latency of what is shown; lower shows fewer frames, sooner.
DEFAULT_MAX_LAG_S = 0.15


@dataclasses.dataclass
class LiveFrame:
  index: int
  frame: np.ndarray        # uint8 HxWx3
  sound_time: float        # clock time its sound was captured
  ready_time: float        # clock time it was ready

  @property
  def latency(self) -> float:
    return self.ready_time - self.sound_time


class LiveStream:
  """One live session over a live-mode `StreamingSampler`: push chunks as they arrive."""

  def __init__(self, sampler: stream.StreamingSampler, clock: Callable[[], float] = time.perf_counter, *,
               max_lag_s: float | None = DEFAULT_MAX_LAG_S):
    """`max_lag_s`: a frame whose sound is already older than this when its turn to be drawn
    comes is dropped (not decoded), except the newest of each step, so that a machine too slow
    to draw 25 frames a second shows fewer frames, on time, instead of falling ever further
    behind. None: draw every frame."""
    if not sampler.live_hop:
      raise ValueError("LiveStream needs a sampler made with live_hop")
    self.sampler, self.clock, self.max_lag_s = sampler, clock, max_lag_s
    self.dropped = 0
    self.sample_rate = sampler.bundle.motion_cfg.media.sample_rate
    self._ends: list[int] = []       # sample count at the end of each chunk
    self._captured: list[float] = []  # clock time each chunk's last sample was captured
    self.received = 0
    self.frames: list[LiveFrame] = []  # index, times (frames themselves dropped once out)

  def push(self, chunk_S: np.ndarray, captured_at: float | None = None) -> Iterator[LiveFrame]:
    """Adds a chunk captured (its last sample) at `captured_at` (default: now); yields the frames
    it makes ready."""
    self.add(chunk_S, captured_at)
    yield from self.ready()

  def add(self, chunk_S: np.ndarray, captured_at: float | None = None) -> None:
    """Adds a chunk without generating (`ready` then makes the frames)."""
    chunk_S = np.asarray(chunk_S, np.float32).reshape(-1)
    self.received += chunk_S.size
    self._ends.append(self.received)
    self._captured.append(self.clock() if captured_at is None else captured_at)
    self.sampler.add_audio(chunk_S)

  def ready(self) -> Iterator[LiveFrame]:
    """The frames the audio added so far makes ready."""
    yield from self._frames(final=False)

  def finish(self) -> Iterator[LiveFrame]:
    """The frames of the audio still held back (the end of speech)."""
    yield from self._frames(final=True)

  def sound_time(self, frame_index: int) -> float:
    """When the sound at the middle of frame `frame_index` was captured."""
    sample = (frame_index + 0.5) * self.sampler.spf
    i = min(bisect.bisect_right(self._ends, sample), len(self._ends) - 1)
    return self._captured[i] - (self._ends[i] - sample) / self.sample_rate

  def _frames(self, *, final: bool) -> Iterator[LiveFrame]:
    for motion in self.sampler.motion_windows(final=final):
      for i in range(len(motion)):
        index = self.sampler.frames_out
        late = self.max_lag_s is not None and self.clock() - self.sound_time(index) > self.max_lag_s
        if late and i < len(motion) - 1:
          self.sampler.skip(1)
          self.dropped += 1
          continue
        for frame in self.sampler.render(motion[i:i + 1]):
          out = LiveFrame(index, frame, self.sound_time(index), self.clock())
          self.frames.append(dataclasses.replace(out, frame=None))
          yield out

  def latency_ms(self) -> dict:
    """Mean, median, 95th percentile and maximum latency of the frames shown so far, in ms, and
    how many were dropped."""
    return {**summarize([f.latency for f in self.frames]), "dropped": self.dropped}


def summarize(latencies_s) -> dict:
  lat = np.asarray(latencies_s, np.float64) * 1e3
  if lat.size == 0:
    return {"frames": 0}
  return {"frames": int(lat.size), "mean": float(lat.mean()), "median": float(np.median(lat)),
          "p95": float(np.percentile(lat, 95)), "max": float(lat.max())}


def simulate(sampler: stream.StreamingSampler, audio_S: np.ndarray, *, chunk_ms: float = DEFAULT_CHUNK_MS,
             max_lag_s: float | None = DEFAULT_MAX_LAG_S,
             on_frame: Callable[[LiveFrame], None] | None = None) -> LiveStream:
  """Plays `audio_S` into a live session in real time, as a microphone would deliver it (a chunk
  every `chunk_ms`, a capture thread that never waits for the sampler), and times every frame."""
  live = LiveStream(sampler, max_lag_s=max_lag_s)
  sr = live.sample_rate
  step = max(1, int(sr * chunk_ms / 1000))
  chunks: list[tuple[np.ndarray, float]] = []
  cond = threading.Condition()
  done = []
  start = live.clock()

  def microphone():
    for end in range(step, audio_S.size + step, step):
      delay = start + min(end, audio_S.size) / sr - live.clock()
      if delay > 0:
        time.sleep(delay)
      with cond:
        chunks.append((audio_S[end - step:end], start + min(end, audio_S.size) / sr))
        cond.notify()
    with cond:
      done.append(True)
      cond.notify()

  mic = threading.Thread(target=microphone, daemon=True)
  mic.start()
  while True:
    with cond:
      while not chunks and not done:
        cond.wait()
      pending, chunks[:] = list(chunks), []
      finished = bool(done) and not pending
    for chunk, captured in pending:  # Everything captured so far, before generating more.
      live.add(chunk, captured)
    for f in live.ready():
      if on_frame:
        on_frame(f)
    if finished:
      break
  for f in live.finish():
    if on_frame:
      on_frame(f)
  mic.join()
  return live
