"""Events coming in: validation, the CloudEvents mapping, batch input, and appending as the command
line asks for it. Imports the store.
"""
