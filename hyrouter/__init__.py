"""hyrouter: the hybrid-router product under one import name of its own.

The product is organised in four folders, kept at the top of the repository and installed here:

- `hyrouter.router`: the routing core (config, policy, engine, wire types; imports nothing else of ours);
- `hyrouter.edge`: the CPU model (llama.cpp) and the on-device SDK;
- `hyrouter.cloud`: the HTTP server, the command line and the AWS Lambda functions;
- `hyrouter.models`: the complexity estimator's build and evaluation.

In a source checkout the four are symbolic links to those folders; a wheel holds them as files.
"""
