"""`python -m genrun.serve`: the same as the genrun-serve command."""

from genrun.serve import main

if __name__ == "__main__":
    main()
