"""hybrid-router on AWS Lambda: the same `router` core behind API Gateway and a streaming Function URL.

    config.py      the tier config from SSM Parameter Store, AppConfig or a file (powertools parameters)
    telemetry.py   EMF metrics and the structured decision line (powertools Metrics and Logger)
    runtime.py     the engine of one execution environment, refreshed when the tier config changes
    handler.py     the buffered handler: powertools APIGatewayRestResolver behind the REST API
    stream.py      the ASGI app (cloud/app.py) behind a Function URL in RESPONSE_STREAM mode (Web Adapter)
    authorizer.py  maps `Authorization: Bearer <key>` to the API Gateway key of the caller's usage plan
    sagemaker.py   an httpx transport that signs calls to a SageMaker endpoint (SigV4)

Nothing here decides a route: every decision is `router.RoutingEngine`'s.
"""
