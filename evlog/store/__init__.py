"""The storage engine: segments of framed records, their index files, the append lock and commit
marker, reading, writing, recovery, compaction and verification. It imports only the top level
(errors, settings, units, ids, report).
"""
