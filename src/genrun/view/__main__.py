from genrun.view import main

main()
