"""The local stack behind `stratoserve dev`: a gateway that behaves like API Gateway and
local Lambda execution environments, one process each."""
