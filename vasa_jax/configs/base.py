"""Every key of a run config, with the demo run's values; run files change what differs.

Each key is read by the code named in its comment (or its section's). `get_config()`
returns the config locked: a run file that sets a key this file does not define fails
at once instead of adding a key nothing reads.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.seed = 0

  # Device mesh of both stages' training (train/mesh.py; `aot` compiles with the same rules). Batches
  # split over every device; parameters, optimizer state and EMA over the `fsdp` axis: an array of at
  # least `fsdp_min_params` elements along its largest dimension that axis divides, smaller ones
  # replicated. fsdp = 1: every chip holds the whole state (data parallel); -1: split over all devices.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1
  c.mesh.fsdp_min_params = 65536   # 256 KiB of float32: smaller arrays cost more to gather than to keep

  # Input limits of `python -m vasa_jax.media` (sample takes them as flags); sample_rate also sets
  # the audio features' rate (motion.py).
  c.media = ml_collections.ConfigDict()
  c.media.sample_rate = 16000
  c.media.max_audio_seconds = 600.0   # Longer audio is refused before decoding it all.
  c.media.min_image_side = 64
  c.media.max_image_side = 2048       # Larger portraits are downscaled on load.

  # Data: clips, windows and the synthetic corpus.
  c.data = ml_collections.ConfigDict()
  c.data.fps = 25
  c.data.window = 50       # W: motion frames generated per diffusion window.
  c.data.context = 10      # K: previous frames carried into the next window.
  c.data.split = "train"
  c.data.workers = 0       # grain worker processes (0: read in the main process)
  c.data.rare_driver = 0.0  # lever: share of stage-1 drivers drawn among a clip's rarest expressions (blinks...)
  c.data.rare_labels = ""   # which expression labels rare drivers are drawn for (comma-separated; "" = all)
  c.data.cross_clip_driver = 0.0  # lever: share of stage-1 drivers from another clip of the source's identity
                                  # (emotion, gaze, distance differ: the decoder must draw them from labels)

  # Stage 1: the face latent space (models/face_latent.py).
  c.face = ml_collections.ConfigDict()
  c.face.image_size = 128
  c.face.vol_channels = 16     # Cv of V_app [D, S, S, Cv]
  c.face.vol_depth = 8        # D
  c.face.vol_size = 32        # S
  c.face.enc_widths = (16, 64)             # appearance encoder: one halving per width
  c.face.enc_vol_blocks = 1                # 3D residual blocks on its posed volume (3D convs are slow on CPUs)
  c.face.motion_input = 64                 # identity/pose/dynamics encoders see this size
  c.face.motion_widths = (16, 48, 96)     # thin first stage: full-res convs are the slow ones on CPU
  c.face.motion_rectify = False    # lever: the dynamics encoder also reads the face rectified to frontal by the pose reading
  c.face.motion_s2d = False        # lever: pose/dynamics encoders fold larger images into channels instead of resizing
  c.face.z_id = 64
  c.face.z_dyn = 64
  c.face.flow_channels = 16
  c.face.render_vol_blocks = 0   # 3D convs run at ~16 GFLOP/s on CPU: skipped to stay real time
  c.face.gen_widths = (96, 64)             # 2D generator: S -> 2S, then 2x2 sub-pixels = image_size
  c.face.out_shuffle = 2          # last stage predicts 2x2 sub-pixels (1: full-resolution conv)
  c.face.render_unet = False       # lever: a U-Net renderer (skip at 2S, volume at S, bottleneck at S/2); needs skip_pixels
  c.face.unet_widths = (48, 96, 160)  # its widths at 2S, S, S/2
  c.face.render_dyn = False        # lever: the renderer is FiLM-modulated by z_dyn as well as z_id
  c.face.skip_channels = 0         # lever: 2D source features at 2S, warped once to the target pose (0: off)
  c.face.skip_pixels = False       # lever: the skip also carries the source's pixels, warped at full size
  c.face.pixel_blend = False       # lever: the U-Net's output is blended per pixel with the source's warped pixels (needs skip_pixels)
  c.face.dyn_templates = 0         # lever: a map the codes draw in canonical face coordinates, warped to the target pose (U-Net; 0: off)
  c.face.dyn_template_channels = 8  # its channels (templates of [2S, 2S, channels] each)
  c.face.skip_depth = 0.5          # canonical depth of the face plane that warps the 2D skip (volume units)
  c.face.free_dyn_from_portrait = False  # decode_motion keeps the portrait's free z_dyn dims (set where dyn_free_from_src = 1)
  c.face.remat = False            # recompute block activations in the backward pass (memory)
  c.face.remat_decodes = False    # training: decode the step's images one job at a time (a loop), each
                                  # recomputed whole in the backward pass: ~1/6 of the decodes' memory
                                  # for one more decoder forward (memory; the paper config on v5e)

  c.disc = ml_collections.ConfigDict()
  c.disc.widths = (32, 64, 128)
  c.disc.scales = 2

  # Identity embedding for the cross-identity loss (our stand-in for ArcFace).
  c.idnet = ml_collections.ConfigDict()
  c.idnet.widths = (32, 64, 96)
  c.idnet.embed_dim = 64
  c.idnet.input_size = 64
  c.idnet.num_classes = 200  # at least the number of training identities

  # Loss weights (train/stage1.py documents each term).
  c.loss = ml_collections.ConfigDict()
  c.loss.l1 = 1.0
  c.loss.ssim = 0.5
  c.loss.face_regions = 0.0     # lever: L1 inside the driver's eyes and mouth (corpus geometry or face-mesh landmarks)
  c.loss.region_l1 = 0.0        # lever: extra L1 where driver and source differ (mouth, eyes, moved edges)
  c.loss.gan = 0.1
  c.loss.fm = 4.0
  c.loss.pose_cons = 1.0
  c.loss.dyn_cons = 0.0         # two more decodes per example: off to fit a CPU budget (pose_cons kept)
  c.loss.cross_id = 0.2
  c.loss.motion_cos = 0.05
  c.loss.motion_scale = 5.0     # CosFace s, m for motion descriptors (MegaPortraits)
  c.loss.motion_margin = 0.2
  c.loss.pose_sup = 0.5         # only where the data has pose labels
  c.loss.pose_sup_all = False   # lever: pose_sup also ties translation and -log distance (else the angles only)
  c.loss.dyn_sup_squared = False  # lever: dyn_sup as squared error (L1 learns the median: no blinks)
  c.loss.free_anchor = 1.0      # motion_encoders phase: free z_dyn dims held at the frozen copy's
  c.loss.dyn_sup = 0.0          # lever: first dims of z_dyn follow expression labels (label_motion.DYN_LABELS)
  c.loss.dyn_free_from_src = 0.0  # lever: share of recons whose free z_dyn dims come from the source
  c.loss.teacher_labels = 0.0   # lever: share of recon/cross decodes driven by the true labels
  c.loss.id_scale = 30.0
  c.loss.id_margin = 0.2

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 4          # global, split over all devices
  c.train.microbatches = 1        # gradient accumulation: each device's share run in this many slices, one
                                  # after another (memory of one slice; the batch per device must divide)
  c.train.steps = 5000
  c.train.lr_gen = 2e-4
  c.train.init_from = ""          # a new run starts from this run folder's (EMA) or bundle's generator weights, fresh optimisers
  c.train.trainable = "all"       # "motion_encoders": re-fit only the pose/dynamics encoders to labels (stage1.py)
  c.train.lr_final = 1.0          # < 1: the generator's lr decays (cosine) to this share of lr_gen at `steps`
  c.train.lr_disc = 2e-4
  c.train.lr_idnet = 1e-3
  c.train.b1 = 0.5
  c.train.b2 = 0.999
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.999
  c.train.gan_start = 1500         # steps of plain reconstruction before the GAN starts
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.train.preview_every = 100
  c.train.keep_checkpoints = 3
  c.train.async_checkpoints = True  # files are written while the next steps train
  # Stage 2: audio front end (audio.py, models/audio_encoder.py).
  c.audio = ml_collections.ConfigDict()
  # "logmel": log-mel from audio.py (n_mels, per_frame below). "wav2vec2": a frozen wav2vec2 run on each
  # window's K + W frames of audio, 2 of its 50 Hz frames averaged per video frame (motion.MotionModel);
  # its weights come from wav2vec2_path, a folder converted by
  # `python -m vasa_jax.models.wav2vec2 --convert HF_DIR OUT` (not shipped: the user supplies them).
  c.audio.features = "logmel"
  c.audio.wav2vec2_path = ""
  c.audio.wav2vec2_layer = -1  # which hidden state: -1 the last (last_hidden_state), 0 the encoder input, i layer i
  c.audio.n_mels = 80
  c.audio.per_frame = 4        # mel frames per video frame (hop 160 at 16 kHz, 25 fps)
  c.audio.dim = 128             # audio embedding per video frame
  c.audio.hidden = 128
  c.audio.layers = 3
  c.audio.lookahead = 1        # video frames of future audio the encoder may see (40 ms)

  # Stage 2: motion diffusion transformer (models/motion_dit.py, diffusion.py).
  c.motion = ml_collections.ConfigDict()
  c.motion.layers = 4
  c.motion.width = 256
  c.motion.heads = 4
  c.motion.mlp_ratio = 4
  c.motion.control_norm = False   # gaze and distance controls centred and scaled (models/motion_dit.py)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "cosine"
  c.diffusion.train_steps = 1000
  c.diffusion.sample_steps = 10     # CPU real time: ~5x cheaper than 50 (evaluate --stage 2 compares both)
  c.diffusion.cfg_audio = 0.5      # lambda_A (VASA-1 default)
  c.diffusion.cfg_gaze = 1.0       # lambda_g
  c.diffusion.pose_smooth = 4.0     # Gaussian low-pass of generated head pose, in frames (0: off; motion.smooth_pose)
  c.diffusion.p_drop = 0.1         # each condition dropped in training (for guidance)
  c.diffusion.p_drop_prev = 0.5    # previous window dropped (first windows)
  c.diffusion.p_truncate = 0.1     # audio cut short inside the window (clip ends)

  c.motion_train = ml_collections.ConfigDict()
  c.motion_train.batch_size = 32
  c.motion_train.microbatches = 1  # gradient accumulation, as train.microbatches
  c.motion_train.steps = 20000
  c.motion_train.lr = 3e-4
  c.motion_train.warmup = 500
  c.motion_train.b1 = 0.9
  c.motion_train.b2 = 0.99
  c.motion_train.weight_decay = 0.01
  c.motion_train.grad_clip = 1.0
  c.motion_train.ema_decay = 0.999
  c.motion_train.log_every = 50
  c.motion_train.checkpoint_every = 500
  c.motion_train.preview_every = 0
  c.motion_train.keep_checkpoints = 3
  c.motion_train.async_checkpoints = True
  c.motion_train.motion_source = "motion"   # "motion": stage-1 latents (extract_motion); "labels": ground truth
  c.lock()
  return c
