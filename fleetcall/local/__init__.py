"""Real local model servers (llama.cpp via xllamacpp) serving SmolLM2 on 127.0.0.1."""
