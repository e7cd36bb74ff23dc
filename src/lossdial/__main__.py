from lossdial.cli import main

main()
