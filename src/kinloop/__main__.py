from kinloop.cli.app import main

main()
