import sys

from distillery_cli import main

main(sys.argv[1:])
