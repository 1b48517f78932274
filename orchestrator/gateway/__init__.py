"""A Triton-protocol (KServe v2) gateway in front of the data plane: unchanged Triton clients
ask for a family (or one of its variants) and the plan decides who answers.

core.py holds what is answered, http_server.py and grpc_server.py how; tensors.py the tensor
encodings of both.
"""
