"""Where jobs run and how their events come back: providers (local, RunPod) and their transports.

Data flows engine → events → remote → store; commands flow back the same way.

Exceptions (each derives from ``engine.LorapodError``, whose message is written for the user)::

    ProviderError               a provider that cannot start, reach or stop a run (remote.provider)
    ├── ArtifactError           a package that cannot be fetched or verified
    ├── RunPodError             RunPod's API refused or could not be reached (remote.runpod.errors)
    ├── TransportError          SSH or HTTP to a pod failed (remote.runpod.errors)
    └── JobDoesNotFit           a job the GPUs asked for cannot hold
    SupervisorError             a job the supervisor will not start, resume or download (remote.supervisor)
    └── BudgetRefused           refused by the monthly budget or the hard cap
    ChannelError                a notice channel that did not deliver (remote.notice_channels)
"""
