# The DragGAN app in a container, e.g. a Hugging Face Space (Docker SDK; in the Space's README
# front matter: `sdk: docker`, `app_port: 7860`).
#
#   docker build -t draggan .                 # CPU-only PyTorch (small image; a free CPU Space)
#   docker run -p 7860:7860 draggan
#
# For a GPU machine or GPU Space, take PyTorch from PyPI, whose Linux wheel includes CUDA:
#   docker build --build-arg TORCH_INDEX=https://pypi.org/simple -t draggan .
# (on a Space, set a variable TORCH_INDEX=https://pypi.org/simple: Spaces pass variables as build args).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Spaces run the container as uid 1000; the app, the Hub cache and the downloads all live in its home.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
WORKDIR /home/user/app
RUN mkdir -p "$HF_HOME"

# The CPU index has torch==2.13.0+cpu, which pip prefers to PyPI's 2.13.0 (a local version sorts
# later), so requirements.txt stays the same for every target.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY --chown=user requirements.txt .
RUN pip install --user --extra-index-url "$TORCH_INDEX" -r requirements.txt

COPY --chown=user . .

EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
