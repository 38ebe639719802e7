"""Ray Serve applications of the factory, importable by Serve config files as
`deployments.<module>:app` (the model server and the gateway arrive with later capabilities)."""
