"""Job specs, the queue (in-process or arq on Redis), the GPU worker, pipelines and media encoding.

torch and diffusers are imported only by the worker side (`jobs.worker`, `jobs.pipelines`, `jobs.tiny`).
"""
