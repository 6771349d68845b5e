"""Program as code: the YAML file format, its JSON Schema, validation and compilation."""

from kinloop.program.loader import compile_program, load_program, parse_program, program_schema

__all__ = ["compile_program", "load_program", "parse_program", "program_schema"]
