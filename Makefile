# mega: two commands for a new user — `make test` and `make quickstart`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip install -c constraints.txt
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: setup weights test test-app app app-setup chromium lint bench quickstart pipeline detector media demo clean

setup: $(STAMP)

# Re-installs only when the dependency list or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) -q --upgrade pip
	$(PIP) -q -e '.[dev]'
	touch $(STAMP)

# The CPU presets' pose-pretrained backbone: BlazePose GHUM's landmark network (Apache-2.0), taken out of
# mediapipe 0.10.21's wheel on PyPI (pinned by version, platform, Python tag and SHA-256; nothing installed).
WEIGHTS := data/weights/pose_landmark_full.tflite
weights: setup $(WEIGHTS)
$(WEIGHTS):
	$(BIN)/python -c "import sys; from mega.backbones.blazepose_file import main; sys.exit(main(sys.argv[1:]))" $(WEIGHTS)

test: setup $(WEIGHTS)
	$(BIN)/python -m pytest tests

# The web page (scripts/app.py) on the quickstart's model (or checkpoint=PATH): http://127.0.0.1:7860
APP_STAMP := $(VENV)/.installed-app
app-setup: setup $(APP_STAMP)
$(APP_STAMP): pyproject.toml constraints.txt
	$(PIP) -q -e '.[dev,app]'
	touch $(APP_STAMP)

app: app-setup
	$(BIN)/python scripts/app.py $(ARGS)

# The page in a real browser: Debian's chromium (installed with apt when missing; a failure stops here,
# it never skips), driven by playwright. CI runs it after `make test` (.ci/run).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || { echo "error: Debian's chromium is needed for the browser test and could not be installed (apt-get install chromium)"; exit 1; }
	@$(CHROMIUM) --version

test-app: app-setup chromium
	$(PIP) -q -e '.[dev,app,browser]'
	MEGA_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -m browser tests/test_app_browser.py

lint: setup
	$(BIN)/ruff check mega scripts tools tests benchmarks
	$(BIN)/ruff format --check mega scripts tools tests benchmarks

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

quickstart: setup $(WEIGHTS)
	$(BIN)/python scripts/quickstart.py

# The motion stages only (about 10 min on 2 cores): mesh tokenizer -> masked-token pre-training ->
# random generation (APD, Frechet distance). `make quickstart` runs the whole job.
PIPE := outputs/pipeline
pipeline: setup
	$(BIN)/python scripts/train_tokenizer.py hydra.run.dir=$(PIPE)/tokenizer
	$(BIN)/python scripts/pretrain.py tokenizer.checkpoint=$(PIPE)/tokenizer/tokenizer.pt hydra.run.dir=$(PIPE)/pretrain
	$(BIN)/python scripts/generate.py checkpoint=$(PIPE)/pretrain/pretrained.pt hydra.run.dir=$(PIPE)/generate

# Optional offline person detector for scripts/demo.py (MediaPipe BlazePose, Apache-2.0): builds the
# model bundle once in a throwaway venv from the mediapipe 0.10.21 wheel's models, then installs the
# mediapipe 1.2.3 runtime (numpy 2) into .venv. Nothing is downloaded at run time.
DETECTOR := data/detectors/pose_landmarker_full.task
detector: setup $(DETECTOR)
	$(PIP) -q --no-deps mediapipe==1.2.3
	$(PIP) -q absl-py flatbuffers certifi matplotlib
	$(BIN)/python -c "from mega.detection.blazepose import BlazePoseDetector; BlazePoseDetector().close(); print('detector ready')"

$(DETECTOR):
	test -x .venv-detector/bin/python || $(PY) -m venv .venv-detector
	.venv-detector/bin/pip install -q --no-deps mediapipe==0.10.21
	.venv-detector/bin/pip install -q "numpy<2" "protobuf>=4.25.3,<5" absl-py attrs flatbuffers "opencv-python-headless<4.11" matplotlib
	.venv-detector/bin/python tools/build_pose_detector.py $(DETECTOR)

# Real footage for the demo: sports2d's demo video (BSD-3-Clause; two people walking), read out of its
# wheel from the package registry (the package itself is not installed).
MEDIA := data/media/sports2d_demo.mp4
media: $(MEDIA)
$(MEDIA):
	mkdir -p data/media/.wheel
	$(PY) -m pip download -q --no-deps --dest data/media/.wheel sports2d==0.8.34
	cd data/media && $(PY) -c "import zipfile,glob; z=zipfile.ZipFile(glob.glob('.wheel/sports2d-*.whl')[0]); open('sports2d_demo.mp4','wb').write(z.read('Sports2D/Demo/demo.mp4')); open('sports2d_LICENSE.txt','wb').write(next(z.read(n) for n in z.namelist() if n.endswith('LICENSE')))"
	rm -rf data/media/.wheel

# The demo on real footage (after `make media detector` and `make quickstart`): two people walking,
# deterministic next to pose-guided refinement with the 2D keypoint error before and after.
demo: setup
	$(BIN)/python scripts/demo.py checkpoint=outputs/quickstart/train_hmr/hmr.pt inputs=[$(MEDIA)] detector=blazepose sampler=uncertainty_guided refiner=pose_guided compare=deterministic every_n=45 max_frames=4

clean:
	rm -rf $(VENV) .venv-detector outputs
