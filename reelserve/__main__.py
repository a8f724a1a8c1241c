from reelserve.cli import main

main()
