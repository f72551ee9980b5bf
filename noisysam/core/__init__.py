"""The ground every layer stands on: the parameter contract (constraints declared once, checked type before
range), the file formats with their atomic writes and checked readers, and the files shipped in the package.

Imports nothing else of noisysam.
"""
