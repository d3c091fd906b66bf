"""The command line: ``deepae COMMAND`` (:mod:`.app`), every command's flags generated from its
settings dataclass (:mod:`.flags`). The only code of the package that parses flags, prints
results or decides the exit status."""
