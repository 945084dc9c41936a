"""The names operators see: the project's metrics and the stages of model work (the `stage`
label and the stage span names). Plain constants that import nothing, so the code that times a
stage and the dashboard name them without loading Prometheus's client.

Counters are exposed with a `_total` suffix, histograms as `_bucket`, `_sum` and `_count`.
"""

REQUESTS = "speech2image_requests"  # a counter: exposed as speech2image_requests_total
REQUEST_SECONDS = "speech2image_request_seconds"
QUEUE_SECONDS = "speech2image_queue_seconds"
INFERENCE_SECONDS = "speech2image_inference_seconds"
AUDIO_SECONDS = "speech2image_audio_seconds"  # speech2image_audio_seconds_total
IMAGES = "speech2image_images"  # speech2image_images_total
ERRORS = "speech2image_errors"  # speech2image_errors_total
IN_PROGRESS = "speech2image_in_progress"
QUEUE_LENGTH = "speech2image_queue_length"  # requests waiting for a replica's scheduler
REFUSED = "speech2image_refused"  # speech2image_refused_total: Busy, the queue was full
DROPPED = "speech2image_dropped"  # speech2image_dropped_total: the deadline passed in the queue
CANCELLED = "speech2image_cancelled"  # speech2image_cancelled_total: the client went away
GPU_MEMORY_USED = "speech2image_gpu_memory_used_bytes"
GPU_UTILIZATION = "speech2image_gpu_utilization_ratio"

# stages of the model work (the `stage` label and the span names), by executor
DECODE, VAD, DETECT_LANGUAGE, TRANSCRIBE = "decode", "vad", "detect_language", "transcribe"
TEXT_ENCODE, DENOISE, VAE_DECODE, PNG_ENCODE = "text_encode", "denoise", "vae_decode", "png_encode"
PREVIEW_DECODE = "preview_decode"  # a partial image of a streaming call, decoded between two steps
STAGES = {
    "whisper": (DECODE, VAD, DETECT_LANGUAGE, TRANSCRIBE),
    "diffusion": (TEXT_ENCODE, DENOISE, VAE_DECODE, PNG_ENCODE, PREVIEW_DECODE),
}
