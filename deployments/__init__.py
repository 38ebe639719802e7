"""Ray Serve applications of the factory.

Serve config files import them as `deployments.<module>:app`; the model server and the gateway
arrive with later capabilities.
"""
