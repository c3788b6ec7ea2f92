"""The cloud side: the GPU endpoint client, the HTTP routes (`routes`) and their front doors, and the CLI."""
