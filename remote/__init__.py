"""Where jobs run and how their events come back: providers (local, RunPod) and their transports.

Data flows engine → events → remote → store; commands flow back the same way.
"""
