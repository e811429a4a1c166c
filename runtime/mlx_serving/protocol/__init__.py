"""The wire protocol, declared once as msgspec Structs."""
