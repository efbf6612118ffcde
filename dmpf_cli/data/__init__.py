"""The data library (design.md §7): MMSA files read safely, the prepared format, generated datasets, batches, and
``dmpf predict``'s sample files. The "Layout" of docs/development.md says which idea lives in which file.
Nothing here imports the model, the application or the CLI.
"""
