"""Pure business logic with no Django imports, testable in microseconds."""
