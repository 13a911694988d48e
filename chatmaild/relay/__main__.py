from chatmaild.relay.cli import main

main()
