"""What runs on a CPU next to the user: the llama.cpp backend."""
