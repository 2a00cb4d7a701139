"""Real local servers on 127.0.0.1 for genrun's tests and benchmarks (and for testing a
pipeline of your own): `fault_server.FaultServer`, an OpenAI-compatible server that fails in
chosen ways, and `vllm_server.vllm_server`, vLLM's own server started on a model folder."""
