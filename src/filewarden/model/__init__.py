"""The values that flow through the agent: events and the enums that name them.

Owns: `events` (frozen msgspec Structs: file events, process records, the
start-up snapshot's tasks and files) and `enums` (hooks, actions, layers,
flags). A field a backend cannot know is None here, never a zero.

Must not import: anything else of filewarden. Every other package may
import this one.
"""
