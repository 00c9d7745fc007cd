"""Production scheduling of LLM calls over model endpoints: config, views, queues, dispatcher,
predictor, health, the scheduler core, client, pool."""
