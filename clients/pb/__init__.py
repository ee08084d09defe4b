"""Generated protobuf and gRPC stubs (python -m clients.codegen). Do not edit."""
