# kvctl: the command line client.
kv_program(kvctl SOURCES ${CMAKE_CURRENT_LIST_DIR}/kvctl.c ${CMAKE_CURRENT_LIST_DIR}/kvctl_txn.c
           LIBS kv_client)
