import sys

from app.cli import main

main(sys.argv[1:])
