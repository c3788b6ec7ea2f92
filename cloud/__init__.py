"""The cloud side: the GPU endpoint client, the HTTP app and the CLI."""
