"""What tests and benchmarks share: the speech data and word error rates (`speech`), free ports
(`ports`), `python app.py` as a process (`app`), audio encoding (`audio_files`) and the load
generator (`load`). Tests and bench import from here; nothing here imports them."""
