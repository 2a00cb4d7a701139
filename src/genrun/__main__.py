from genrun.cli import main

main()
